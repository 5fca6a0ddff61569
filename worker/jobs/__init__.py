"""Per-kind job bodies. Each runs one attempt against the database and object
store, writing through the attempt's fenced checkpoints. No taskiq, no grpc."""
