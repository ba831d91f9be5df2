"""The trio shell: sockets, tasks and time around the pure core."""
