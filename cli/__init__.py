from . import saas_secret_key
