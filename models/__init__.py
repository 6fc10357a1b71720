from . import saas_secret_mixin
from . import saas_server
from . import saas_server_health_check
from . import saas_plan
from . import saas_operation
from . import saas_operation_journal
from . import saas_template
from . import saas_instance
