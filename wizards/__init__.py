from . import saas_backup_restore
from . import saas_server_rebalance
from . import saas_server_rebalance_line
from . import saas_instance_transfer
