{
    "name": "SaaS Manager",
    "summary": "Register the Odoo servers that host client databases, watch their health "
    "and capacity, keep template databases and provision instances by cloning them.",
    "version": "18.0.1.1.0",
    "category": "Administration",
    "website": "https://github.com/saas-manager/saas_manager",
    "author": "saas_manager developers",
    "license": "LGPL-3",
    "depends": ["base", "mail", "bus"],
    "external_dependencies": {
        "python": ["requests", "psycopg2", "paramiko", "cryptography", "prometheus_client"]
    },
    "data": [
        "security/saas_manager_security.xml",
        "security/ir.model.access.csv",
        "data/ir_cron_data.xml",
        "data/mail_template_data.xml",
        "data/saas_alert_mail_template_data.xml",
        "views/saas_server_views.xml",
        "views/saas_server_health_check_views.xml",
        "views/saas_instance_views.xml",
        "views/saas_template_views.xml",
        "views/saas_plan_views.xml",
        "views/saas_operation_views.xml",
        "views/saas_backup_storage_views.xml",
        "views/saas_backup_views.xml",
        "views/saas_alert_views.xml",
        "views/saas_server_fleet_views.xml",
        "views/saas_server_rebalance_views.xml",
        "views/saas_manager_menus.xml",
    ],
    "demo": ["demo/saas_manager_demo.xml"],
    "assets": {
        "web.assets_backend": [
            "saas_manager/static/src/scss/saas_manager.scss",
            "saas_manager/static/src/js/operation_refresh_service.js",
        ],
        "web.assets_tests": ["saas_manager/static/tests/tours/**/*"],
    },
    "application": True,
    "installable": True,
}
