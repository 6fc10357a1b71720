from . import (
    test_get_available_server,
    test_saas_server,
    test_saas_server_health,
    test_saas_server_security,
)
