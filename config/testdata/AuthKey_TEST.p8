-----BEGIN PRIVATE KEY-----
not a real key, only needs to exist
-----END PRIVATE KEY-----
