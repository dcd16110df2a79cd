import glob
import pathlib
import re

from setuptools import Extension, find_packages, setup

# The engine (osvrt/_engine/): the scheduler's hot path against the CPython C
# API.  It reads the C core's headers for struct layouts and calls the core
# through the table that osvrt._core exports (csrc/core/core_api.h).
engine = Extension(
    "osvrt._engine",
    # csrc/net/tx_batch.c: batched UDP replies, used by the engine alone
    # (plain C, no SDT probes: compiled here, not into osvrt._core).
    sources=sorted(glob.glob("osvrt/_engine/*.c")) + ["csrc/net/tx_batch.c"],
    depends=sorted(glob.glob("osvrt/_engine/*.h") + glob.glob("csrc/core/*.h"))
    + ["csrc/net/tx_batch.h", "csrc/net/tcp/tcp_link.h", "csrc/net/tcp/tcp.h"],
    # csrc/net/tcp: tcp_link.h's table of the link's calls (tcplink.c calls
    # the core's copy through it; nothing of csrc/net/tcp is compiled here).
    include_dirs=["csrc/core", "csrc/net", "csrc/net/tcp"],
    extra_compile_args=["-std=gnu11", "-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
                        "-Werror", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
    libraries=["m"],
)

HERE = pathlib.Path(__file__).parent
# The version lives in osvrt/_version.py (osvrt.__version__), read here without
# importing the package (its extensions are not built yet).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "osvrt" / "_version.py").read_text(),
                    re.M).group(1)
# The public repository, where docs/ is browsable (no remote is configured in
# this checkout: confirm the address before the first upload).
URL = "https://github.com/osvrt/osvrt"

setup(
    name="osvrt",
    version=VERSION,
    description="Green threads scheduled the way the OSv unikernel schedules threads",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url=URL,
    project_urls={
        "Documentation": f"{URL}/tree/main/docs",
        "API reference": f"{URL}/blob/main/docs/api.md",
        "Design": f"{URL}/blob/main/docs/design.md",
        "Source": URL,
    },
    license="BSD-3-Clause",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "License :: OSI Approved :: BSD License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: C",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Programming Language :: Python :: Implementation :: CPython",
        "Topic :: System",
        "Topic :: System :: Networking",
        "Topic :: Software Development :: Libraries",
    ],
    packages=find_packages(include=["osvrt", "osvrt.*"]),
    # PEP 561: osvrt ships its types (annotations, the engine's stubs _engine.pyi)
    package_data={"osvrt": ["py.typed", "*.pyi", "bench/*.pyi"]},
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["osvrt/_build.py:ffibuilder", "osvrt/bench/_build_peers.py:ffibuilder"],
    ext_modules=[engine],
    # cffi binds the C core.  atomics: release/acquire loads and stores on
    # the stats file that `python -m osvrt top` reads from another process
    # (osvrt/observe/shared_words.py; off the hot path; see README, "Dependencies").
    # numba is needed only for classifier rules (osvrt.net.rules), imported
    # when one is compiled.
    install_requires=["cffi>=1.15", "atomics>=1.0.3,<2"],
    extras_require={
        "numba": ["numba>=0.58"],
        # osvrt.anyio: the anyio backend "osvrt" (anyio's asyncio backend on
        # osvrt's loop; its name reaches libraries through sniffio)
        "anyio": ["anyio>=4.4", "sniffio>=1.3"],
        # numba, so that the test run exercises the classifier rules; rich:
        # tests/test_bench_cli.py checks the report drawn with and without it
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "numba>=0.58", "rich>=12",
                 "mypy>=1.5",
                 # tests/aio: real libraries on osvrt.new_event_loop (httpx through
                 # anyio, aiohttp client and server, uvicorn serving an ASGI app; TLS
                 # certificates from trustme).  uvicorn 0.36 takes a loop factory
                 # as --loop module:function.
                 "anyio>=4", "httpx>=0.27", "aiohttp>=3.9", "uvicorn>=0.36", "trustme>=1.0",
                 # tests/aio/test_anyio_backend.py: the backend "osvrt" needs it
                 # (osvrt[anyio]); anyio itself no longer brings it
                 "sniffio>=1.3"],
        # the linter and the type checker that CI runs (.ci/run; config in pyproject.toml)
        "lint": ["ruff>=0.4", "mypy>=1.5"],
        # tests/peers/run_anyio.py: anyio's own suite (its test dependencies;
        # the pinned anyio is the version whose tests/ it runs; sniffio for the
        # run with anyio_backend = "osvrt", as osvrt[anyio] has it)
        "peersuite": ["anyio==4.16.0", "sniffio>=1.3", "uvloop>=0.22.1", "pytest>=9",
                      "pytest-mock>=3.14", "pytest-timeout>=2.4", "hypothesis>=4.18.2",
                      "psutil>=5.9", "trustme>=1.0", "truststore>=0.9.1",
                      "blockbuster>=1.5.29"],
        "plot": ["matplotlib>=3.5"],
        # `python -m osvrt bench`'s tables and progress bar (plain text without it)
        "bench": ["rich>=12"],
        # the peers that `python -m osvrt bench` measures when they are installed
        "peers": ["uvloop>=0.17", "trio>=0.22", "gevent>=22"],
    },
    entry_points={"pytest11": ["osvrt = osvrt.pytest_plugin"]},
    zip_safe=False,
)
