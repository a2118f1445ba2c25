"""fairseq_kt: knowledge transferring from pre-trained LMs into wav2vec2 CTC models (a fairseq plugin)."""

from setuptools import find_packages, setup

setup(
    name="fairseq_kt",
    version="0.1.0",
    description=(
        "fairseq plugin: CTC fine-tuning of wav2vec2 with knowledge transferring from pre-trained "
        "language models (Deng et al., ICASSP 2022)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_kt", "fairseq_kt.*"]),
    # the recipes (fairseq_kt/configs/finetune/*.yaml, ...) ship inside the package: fairseq-kt-demo and
    # --config-dir work from an installed wheel; the top-level configs/ of a checkout links to them
    package_data={"fairseq_kt": ["configs/**/*.yaml"]},
    include_package_data=True,
    # fairseq itself is an extra: a user with their own fairseq checkout installs that instead
    # (see README, "Installing with your own fairseq").
    install_requires=[
        "torch>=2.1",
        "transformers>=4.40",
        "sentencepiece",
        "soundfile",
        "editdistance",
        "numpy",
        "pyyaml",
        "tqdm",
        "soxr",  # resampling in fairseq-kt-prepare --resample
        "scipy",  # paired statistics of the experiment
        "scikit-learn",  # the experiment's linear probe
    ],
    extras_require={
        "fairseq": ["ve-fairseq==0.12.3"],
        "test": ["pytest>=7", "ruff"],
        "plot": ["matplotlib"],
        "lm": ["pyctcdecode>=0.5"],
        "bench": ["torch-cif==0.2.0"],
    },
    entry_points={
        "console_scripts": [
            "fairseq-kt-demo=fairseq_kt.cli.demo:main",
            "fairseq-kt-prepare=fairseq_kt.cli.prepare:main",
            "fairseq-kt-evaluate=fairseq_kt.cli.evaluate:main",
            "fairseq-kt-export=fairseq_kt.cli.export:main",
            "fairseq-kt-cache-teacher=fairseq_kt.cli.cache_teacher:main",
            "fairseq-kt-bench=fairseq_kt.cli.bench:main",
            "fairseq-kt-pretrain=fairseq_kt.cli.pretrain:main",
            "fairseq-kt-import-hf=fairseq_kt.cli.import_hf:main",
        ]
    },
)
