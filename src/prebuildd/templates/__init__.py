"""Template versions: pushing one (static checks, then an import job), recording what its import found, and the
archive format a version travels in."""
