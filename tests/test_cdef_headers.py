"""The cffi cdefs (osvrt/_build.py for osvrt._core, osvrt/bench/_build_peers.py
for osvrt.bench._peers) are copies of C declarations: each function, struct,
enum and macro they declare is checked here against the C headers (csrc/),
or against the build script's own glue where the cdef names an adapter
defined there.  The compiler checks the functions too, when the module is
built; this test says which declaration drifted, without a build."""
import pathlib
import re
import runpy

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(path, names):
    """The build script's CDEF and GLUE (it is run, not built: running it only
    declares the cdef)."""
    ns = runpy.run_path(str(path), run_name="osvrt_cdef_check")
    return {name: ns.get(name, "") for name in names}


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


_WORD = re.compile(r"[A-Za-z_]\w*|\*|\[|\]|\(|\)|\d+|\S")
_QUALIFIERS = {"extern", "static", "inline", "__inline__"}


def _type_of(decl):
    """'const uint64_t *h' -> 'const uint64_t *'; the declared name dropped."""
    toks = [t for t in _WORD.findall(decl) if t not in _QUALIFIERS]
    if len(toks) > 1 and re.fullmatch(r"[A-Za-z_]\w*", toks[-1]) and toks[-1] not in (
            "void", "int", "char", "short", "long", "double", "float", "unsigned", "signed"):
        toks = toks[:-1]
    return " ".join(toks)


_FUNC = re.compile(r"([A-Za-z_][\w\s\*]*?)\b(osvrt_\w+)\s*\(([^;{}()]*(?:\([^()]*\)[^;{}()]*)*)\)"
                   r"\s*[;{]", re.S)


def functions(text):
    """name -> (return type, (parameter types...)) of every osvrt_ function
    declared or defined in C text."""
    out = {}
    for m in _FUNC.finditer(_strip_comments(text)):
        ret, name, params = m.groups()
        ret = ret.split("\n")[-1].strip()
        if not ret or ret.endswith(("return", "=", ",")) or re.search(r"\b(return|if|while)\b", ret):
            continue                                      # a call, not a declaration
        params = [p.strip() for p in params.split(",") if p.strip()]
        out[name] = (_type_of(ret + " " + name), tuple(_type_of(p) for p in params))
    return out


def structs(text):
    """name -> [(type, field) ...] of every `struct osvrt_x { ... };` with a body
    (nested braces and `...;` kept out: `...` marks a partial cdef struct)."""
    out = {}
    for m in re.finditer(r"struct\s+(osvrt_\w+)\s*\{([^{}]*)\}\s*;", _strip_comments(text)):
        fields = []
        for decl in m.group(2).split(";"):
            decl = " ".join(decl.split())
            if not decl or decl == "...":
                continue
            decl = re.sub(r"\b_Alignas\s*\([^)]*\)\s*", "", decl)
            base, *names = [p.strip() for p in decl.split(",")]
            first = _type_of(base)
            base_type = re.sub(r"\s*\*+$", "", first)
            fields.append((first, base.split()[-1].lstrip("*")))
            for n in names:
                stars = n.count("*")
                fields.append(((base_type + " " + "* " * stars).strip(), n.lstrip("*").strip()))
        out[m.group(1)] = fields
    return out


def _norm_fields(fields, consts):
    """Array sizes spelled as in the cdef: a macro with a number is its number."""
    def size(m):
        return f" [ {consts.get(m.group(1), m.group(1))} ]"
    return [(re.sub(r"\s*\[\s*(\w+)\s*\]", size, t), re.sub(r"\[.*", "", n))
            for t, n in fields]


def numeric_macros(text):
    """Macros with a number, and enum members with their values (counted on
    from the last explicit one, as C does: a NAMES_COUNT member sizes arrays)."""
    text = _strip_comments(text)
    out = dict(re.findall(r"^\s*#\s*define\s+(\w+)\s+(\d+)\b", text, re.M))
    for body in re.findall(r"enum\s+\w*\s*\{([^}]*)\}", text):
        value = -1
        for member in filter(None, (m.strip() for m in body.split(","))):
            name, _, explicit = (p.strip() for p in member.partition("="))
            value = int(explicit, 0) if explicit.isdigit() else value + 1
            out.setdefault(name, str(value))
    return out


def macros_and_enums(text):
    text = _strip_comments(text)
    names = set(re.findall(r"^\s*#\s*define\s+(\w+)", text, re.M))
    for body in re.findall(r"enum\s+\w*\s*\{([^}]*)\}", text):
        names.update(re.findall(r"\b([A-Z][A-Z0-9_]+)\b\s*(?:=|,|$)", body))
    return names


def _headers(*dirs):
    return "\n".join(p.read_text() for d in dirs for p in sorted((REPO / "csrc" / d).glob("*.h")))


BUILDS = [
    ("osvrt/_build.py", ("core", "net", "net/tcp")),
    ("osvrt/bench/_build_peers.py", ("core", "net", "bench")),
]


@pytest.mark.parametrize("script,dirs", BUILDS, ids=[b[0] for b in BUILDS])
def test_every_cdef_function_matches_its_c_declaration(script, dirs):
    ns = _load(REPO / script, ("CDEF", "GLUE"))
    c = functions(_headers(*dirs))
    c.update(functions(ns["GLUE"]))                       # the script's own adapters
    declared = functions(ns["CDEF"])
    named = set(re.findall(r"\b(osvrt_\w+)\s*\(", _strip_comments(ns["CDEF"])))
    assert named and named == set(declared), named ^ set(declared)   # each one parsed
    missing = sorted(set(declared) - set(c))
    assert missing == [], f"declared in the cdef, in no header: {missing}"
    drift = {n: (declared[n], c[n]) for n in declared if declared[n] != c[n]}
    assert drift == {}, drift


@pytest.mark.parametrize("script,dirs", BUILDS, ids=[b[0] for b in BUILDS])
def test_every_cdef_struct_matches_its_c_definition(script, dirs):
    ns = _load(REPO / script, ("CDEF", "GLUE"))
    text = _headers(*dirs) + "\n" + ns["GLUE"]
    c = structs(text)
    for name, fields in structs(ns["CDEF"]).items():
        partial = re.search(rf"struct\s+{name}\s*\{{[^{{}}]*\.\.\.\s*;", ns["CDEF"]) is not None
        assert name in c, f"struct {name}: in the cdef, in no header"
        consts = numeric_macros(text)
        want, have = _norm_fields(fields, consts), _norm_fields(c[name], consts)
        if partial:                                       # `...;`: the fields it names
            assert [f for f in want if f not in have] == [], (name, want, have)
        else:
            assert want == have, (name, want, have)


@pytest.mark.parametrize("script,dirs", BUILDS, ids=[b[0] for b in BUILDS])
def test_every_cdef_constant_is_defined_in_c(script, dirs):
    ns = _load(REPO / script, ("CDEF", "GLUE"))
    c = macros_and_enums(_headers(*dirs) + "\n" + ns["GLUE"])
    declared = macros_and_enums(ns["CDEF"])
    assert sorted(declared - c) == []


def enum_values(text):
    out = {}
    for body in re.findall(r"enum\s+\w*\s*\{([^}]*)\}", _strip_comments(text)):
        out.update(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=\s*(\d+)", body))
    return out


def variables(text):
    """name -> type of every osvrt_ variable declared at file scope."""
    return {m.group(2): _type_of(m.group(1) + " " + m.group(2)) for m in re.finditer(
        r"^\s*((?:extern\s+)?(?:const\s+)?[A-Za-z_][\w\s\*]*?)\b(osvrt_\w+)\s*(?:\[[^]]*\])?\s*[;=]",
        _strip_comments(text), re.M) if m.group(1).split() != ["struct"]}


@pytest.mark.parametrize("script,dirs", BUILDS, ids=[b[0] for b in BUILDS])
def test_every_cdef_enum_value_and_variable_matches_c(script, dirs):
    ns = _load(REPO / script, ("CDEF", "GLUE"))
    text = _headers(*dirs) + "\n" + ns["GLUE"]
    want, have = enum_values(ns["CDEF"]), enum_values(text)
    assert {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v} == {}
    want, have = variables(ns["CDEF"]), variables(text)
    assert {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v} == {}


def test_the_checks_see_a_drift():
    header = "int osvrt_f(struct osvrt_rt *rt, uint32_t cpu);\nstruct osvrt_s { uint64_t a, b; };"
    assert functions(header) == {"osvrt_f": ("int", ("struct osvrt_rt *", "uint32_t"))}
    assert functions("int osvrt_f(struct osvrt_rt *x, uint64_t cpu);") != functions(header)
    assert structs(header) == {"osvrt_s": [("uint64_t", "a"), ("uint64_t", "b")]}
    assert structs("struct osvrt_s { uint64_t a; uint32_t b; };") != structs(header)
