"""Writing nets in other frameworks' formats. Above layers/ (it reads built layers' declared
settings), beside io/ (which knows bytes on disk only)."""
