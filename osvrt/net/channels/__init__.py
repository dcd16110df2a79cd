"""UDP on net channels: the classifier service of a runtime (service.py), reading
a channel as plain memory (lane.py), and endpoints (udp.py)."""
