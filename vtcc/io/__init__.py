"""The file boundary: :mod:`vtcc.io.reader` opens what vtcc reads from disk (regular files only,
sizes bounded by the file, records typed and checked), :mod:`vtcc.io.writer` is the one way vtcc
writes (inside the command's own folders, atomically, never through a link, never onto a file vtcc
did not create).

Reading: :mod:`~vtcc.io.reader` (the reader kinds, :class:`~vtcc.io.reader.UnreadableFile`,
regular files and bounded reads), :mod:`~vtcc.io.json_records` (typed JSON records),
:mod:`~vtcc.io.numpy_files` (``.npy`` and ``.npz``), :mod:`~vtcc.io.image_files` (images).
Writing: :mod:`~vtcc.io.writer` (the :class:`~vtcc.io.writer.Writer`'s writes) over
:mod:`~vtcc.io.manifest` (the record of what vtcc wrote) over :mod:`~vtcc.io.write_folders`
(where a write may go, its folders opened without following a link)."""
