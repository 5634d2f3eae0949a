"""Making trained models smaller and faster: pruning, factorisation, quantization, export."""
