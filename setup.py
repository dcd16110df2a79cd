from setuptools import find_packages, setup

setup(
    name="osvrt",
    version="0.1.0",
    description="Green threads scheduled the way the OSv unikernel schedules threads",
    packages=find_packages(include=["osvrt", "osvrt.*"]),
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["osvrt/_build.py:ffibuilder"],
    install_requires=["cffi>=1.15", "atomics>=1.0", "numba>=0.58"],
    extras_require={
        # rich: tests/test_bench_cli.py checks the report drawn with and without it
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "rich>=12"],
        "plot": ["matplotlib>=3.5"],
        # `python -m osvrt bench`'s tables and progress bar (plain text without it)
        "bench": ["rich>=12"],
        # the peers that `python -m osvrt bench` measures when they are installed
        "peers": ["uvloop>=0.17", "trio>=0.22", "gevent>=22"],
    },
    entry_points={"pytest11": ["osvrt = osvrt.pytest_plugin"]},
    zip_safe=False,
)
