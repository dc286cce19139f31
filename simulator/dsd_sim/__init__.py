"""DSD-Sim: discrete-event simulator of edge/cloud speculative decoding."""
