"""The code location: every definition under ``acode_dagster/defs``, loaded by convention."""

import dagster as dg

import acode_dagster.defs

defs = dg.load_defs(defs_root=acode_dagster.defs)
