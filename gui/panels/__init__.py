"""The main window's tabs: model, capture, generate, library, sweep."""
