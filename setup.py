import glob

from setuptools import Extension, find_packages, setup

# The engine (osvrt/_engine/): the scheduler's hot path against the CPython C
# API.  It reads the C core's headers for struct layouts and calls the core
# through the table that osvrt._core exports (csrc/core_api.h).
engine = Extension(
    "osvrt._engine",
    sources=sorted(glob.glob("osvrt/_engine/*.c")),
    depends=sorted(glob.glob("osvrt/_engine/*.h") + glob.glob("csrc/*.h")),
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
                        "-Werror", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
    libraries=["m"],
)

setup(
    name="osvrt",
    version="0.1.0",
    description="Green threads scheduled the way the OSv unikernel schedules threads",
    packages=find_packages(include=["osvrt", "osvrt.*"]),
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["osvrt/_build.py:ffibuilder"],
    ext_modules=[engine],
    install_requires=["cffi>=1.15", "atomics>=1.0", "numba>=0.58"],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6"],
        "plot": ["matplotlib>=3.5"],
        # the peers that `python -m osvrt bench` measures when they are installed
        "peers": ["uvloop>=0.17", "trio>=0.22", "gevent>=22"],
    },
    entry_points={"pytest11": ["osvrt = osvrt.pytest_plugin"]},
    zip_safe=False,
)
