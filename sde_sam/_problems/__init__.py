"""Problems (finite-sum losses), the built-in ones and networks, and batch samplers (DESIGN §1)."""
