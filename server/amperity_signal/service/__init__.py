"""The gRPC edge: servicers, error mapping, interceptors and the server builder."""
