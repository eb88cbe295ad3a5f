from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="person-reid-bpm",
    version="0.1.0",
    description="Mixed-precision person re-identification: batch-hard triplet training, evaluation, edge export",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["bpm", "bpm.*"]),
    install_requires=requirements,
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["bpm=bpm.cli:main"]},
)
