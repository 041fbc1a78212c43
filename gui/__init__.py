"""ActAdd Studio's desktop front end (PySide6). All steering math lives in `engine`; see docs/gui.md."""
