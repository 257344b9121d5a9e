"""Demo data that looks like ACODE: Brazilian fiscal codes, a seeded generator and a bulk loader.

``brazil`` holds the real code lists and check-digit rules, ``generator`` turns a table
description and a day into deterministic rows, ``loader`` puts those rows into a MySQL server.
"""
