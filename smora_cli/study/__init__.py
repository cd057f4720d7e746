"""The evidence study (docs/results.md) as data over smora's commands.

`plan` lists each part's runs (a `smora` command each: recipe, overrides, output directory),
`execute` runs or resumes one through the library, `stats` holds the mean ± std and verdict
rule, `collect` reads finished runs' results files into tables and `report` fills the report
template with them. `scripts/study.py` is the command line over these modules.
"""
