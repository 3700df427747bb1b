"""What `fleet` runs besides the agent: one module per command family, drawing nothing itself
(the dashboard launcher hands the screen to `fleettui.views`)."""
