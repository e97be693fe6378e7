"""What a build writes and users ship: the sealed artifact folder (manifest, writer, integrity), its golden set, report, and pack/unpack."""
