"""Pure-torch networks of the supported models, each with a loader for its upstream state dict."""
