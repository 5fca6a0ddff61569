"""datamill service core: transport-free domain shared by the server and the worker."""
