"""Tools around the compiler (documentation generators): they import the pipeline; the pipeline never imports them."""
