"""One module per stage, each exposing one public function that the CLI command calls."""
