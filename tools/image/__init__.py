"""Tools that build gespann's OCI image and measure it."""
