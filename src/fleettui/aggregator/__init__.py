"""The operator side: watches every node without letting one bad node stall the rest."""
