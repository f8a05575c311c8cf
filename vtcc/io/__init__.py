"""The file boundary: :mod:`vtcc.io.reader` opens what vtcc reads from disk (regular files only,
sizes bounded by the file, records typed and checked), :mod:`vtcc.io.writer` is the one way vtcc
writes (inside the command's own folders, atomically, never through a link, never onto a file vtcc
did not create)."""
