"""One module per `smora` command: each parses its arguments, calls the library and prints."""
