"""What people read: the papers' tables rebuilt, the figures and the generated report."""
