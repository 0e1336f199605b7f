"""tap-stripe-dd: a Singer tap for Stripe, its local emulator, and SQL over the warehouse."""
