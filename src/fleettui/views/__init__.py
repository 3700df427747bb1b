"""What the operator sees: the Textual dashboard, the Rich fallback and the helpers both draw with."""
