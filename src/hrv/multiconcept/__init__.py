"""Multi-concept generation (paper section 5.3): Attend-and-Excite, A&E-HRV and A&E's metrics."""
