"""The one exception of DICOM in and out."""

from __future__ import annotations


class DicomError(ValueError):
    """DICOM input or output that bmseg refuses; the message is one line that says what and where.

    Messages name series by number and description and files by their base name, never by a path (an
    export's folders are often named after the patient) and never with a header's identifying values.
    """
