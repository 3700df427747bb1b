"""What the operator sees: the Textual dashboard, the Rich fallback and what both draw with."""
