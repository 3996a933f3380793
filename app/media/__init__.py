"""Sample images for the browser: ``routes`` serve originals and cached thumbnails to the users
(and workers) who may see the sample's dataset; ``service`` does the image work and
``repository`` the lookups."""
