"""The provider daemon: shard store, chain follower, server."""
