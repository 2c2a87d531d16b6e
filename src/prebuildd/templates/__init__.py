"""Templates: the catalog users see and its rules (activation, deprecation, deletion), pushing a version (static
checks, then an import job), recording what its import found, and the archive format a version travels in."""
