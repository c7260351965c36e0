"""Installs the top-level folders under one distribution namespace, ``featurestream``.

The repository keeps the layout its users know (``udfs/``, ``jobs/``, ``serving/``,
``schemas/``, ``devstack/`` beside ``featurestream/``), but nothing lands in site-packages as a
generic top-level package: ``udfs/`` imports as ``featurestream.udfs``, ``jobs/`` as
``featurestream.jobs``, and so on. Everything else is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

ROOTS = {
    "featurestream": "featurestream",
    "featurestream.udfs": "udfs",
    "featurestream.jobs": "jobs",
    "featurestream.serving": "serving",
    "featurestream.schemas": "schemas",
    "featurestream.devstack": "devstack",
}


def packages() -> list[str]:
    """Every package below each root, named in the namespace."""
    names = []
    for namespace, folder in ROOTS.items():
        names.append(namespace)
        names += [f"{namespace}.{sub}" for sub in find_packages(folder)]
    return sorted(set(names))


setup(package_dir=ROOTS, packages=packages())
