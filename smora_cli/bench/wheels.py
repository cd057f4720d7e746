"""Python packages the GPU machine lacks, carried to it as wheels, and a check that they fit.

The GPU machine has torch, transformers, accelerate, peft and the rest of smora's
dependencies but no `datasets` or `evaluate`, and no network. `fetch` (scripts/gpu_check.sh
fetch-wheels DIR) downloads these wheels here; there, `scripts/gpu_check.sh --wheels DIR`
installs them into a private folder before the check. Versions are the ones the test suite
runs with; each wheel's own requirements are checked against what the machine has.
"""

from __future__ import annotations

from importlib import metadata

# name==version, and the import name that proves the install. dill and multiprocess are
# datasets' and evaluate's only requirements the machine does not have.
WHEELS = {
    "datasets==5.2.0": "datasets",
    "evaluate==0.4.6": "evaluate",
    "dill==0.4.1": "dill",
    "multiprocess==0.70.19": "multiprocess",
}
# DeepSpeed (ZeRO-2) publishes only a source archive; built here with DS_BUILD_OPS=0 it is a
# pure-Python wheel whose CUDA ops compile on first use. pydantic and hjson are its
# requirements the machine lacks (pydantic-core is pydantic's compiled half).
DEEPSPEED_WHEELS = {
    "deepspeed==0.19.8": "deepspeed",
    "hjson==3.1.0": "hjson",
    "pydantic==2.14.4": "pydantic",
    "pydantic-core==2.50.5": "pydantic_core",
    "annotated-types==0.8.0": "annotated_types",
    "typing-inspection==0.4.5": "typing_inspection",
}
# What must be importable for each part of the check.
NEEDED = {
    "train": ["torch", "transformers", "accelerate", "peft", "datasets", "evaluate", "typer"],
    "bench": ["torch", "transformers", "peft"],
    "zero2": ["deepspeed"],
}


def requirement_problems(distributions: list[str]) -> list[str]:
    """Unmet requirements of installed `distributions` (their non-extra Requires-Dist).

    One line per problem: a requirement not installed, or installed at a version outside
    its specifier. A distribution that is not installed itself is skipped.
    """
    from packaging.requirements import Requirement

    problems = []
    for name in distributions:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                found = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {requirement}, which is not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(
                found, prereleases=True
            ):
                problems.append(f"{name} needs {requirement}, found {requirement.name} {found}")
    return problems


def installed_versions(names: list[str]) -> dict[str, str | None]:
    """{distribution: version or None when absent}."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def distribution_name(pin: str) -> str:
    return pin.split("==")[0]
