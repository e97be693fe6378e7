"""The build: recipe -> component -> capture -> passes -> precision -> backend -> artifact, each stage through the cache."""
