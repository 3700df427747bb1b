"""The Textual dashboard. Only this package imports textual; it reads a FleetSource."""
