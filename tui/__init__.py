"""tlsgate's Textual dashboard (`tlsgate dashboard`); the only package that imports textual."""
