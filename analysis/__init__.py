"""Analysis: rebuild the reports' comparison figures, tables and report from a sweep's runs."""
