from . import test_saas_server
from . import test_saas_server_health
from . import test_saas_server_security
from . import test_get_available_server
from . import test_provisioning
from . import test_ui
from . import test_i18n
from . import test_saas_instance
