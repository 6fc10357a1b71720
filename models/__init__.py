from . import saas_instance, saas_plan, saas_server, saas_server_health_check, saas_template
