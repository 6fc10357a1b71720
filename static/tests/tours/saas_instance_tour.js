/** @odoo-module **/
/**
 * Provision an instance through the menus, from a ready template on an active
 * server that tests/test_ui.py prepared (the Odoo serving this page manages
 * itself). The test passes the names in the start URL's query:
 * saas_template, saas_server, saas_instance_db.
 */

import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

const INSTANCE_NAME = "Tour Client";

function pickMany2one(fieldName, value) {
    return [
        {
            content: `Search ${value} in ${fieldName}`,
            trigger: `.o_form_view .o_field_widget[name=${fieldName}] input`,
            run: `edit ${value}`,
        },
        {
            content: `Pick ${value}`,
            trigger: `.o_field_widget[name=${fieldName}] .o-autocomplete--dropdown-item > a:contains(${value})`,
            run: "click",
        },
        {
            trigger: `.o_form_view .o_field_widget[name=${fieldName}] input:value(${value})`,
        },
    ];
}

registry.category("web_tour.tours").add("saas_manager_instance_tour", {
    steps: () => {
        // Read once, when the tour starts: menu navigation changes the URL.
        const params = new URLSearchParams(window.location.search);
        const templateName = params.get("saas_template");
        const serverName = params.get("saas_server");
        const databaseName = params.get("saas_instance_db");
        return [
            {
                content: "The test gave the names",
                trigger: "body",
                run() {
                    if (!templateName || !serverName || !databaseName) {
                        throw new Error(
                            "start this tour at " +
                                "/odoo?saas_template=...&saas_server=...&saas_instance_db=..."
                        );
                    }
                },
            },
            ...stepUtils.goToAppSteps("saas_manager.saas_manager_menu_root", "Open SaaS Manager"),
            {
                content: "Open Templates",
                trigger: ".o_main_navbar [data-menu-xmlid='saas_manager.saas_template_menu']",
                run: "click",
            },
            {
                content: "The template is Ready",
                trigger: `.o_list_view .o_data_row:contains(${templateName}) td[name=state]:contains(Ready)`,
            },
            {
                content: "Open Instances",
                trigger: ".o_main_navbar [data-menu-xmlid='saas_manager.saas_instance_menu']",
                run: "click",
            },
            {
                trigger: ".o_breadcrumb .o_last_breadcrumb_item:contains(Instances)",
            },
            {
                content: "Create an instance",
                trigger: ".o_control_panel .o_list_button_add, .o_control_panel .o-kanban-button-new",
                run: "click",
            },
            {
                content: "Name it",
                trigger: ".o_form_view .o_field_widget[name=name] input",
                run: `edit ${INSTANCE_NAME}`,
            },
            {
                content: "Give its database a name",
                trigger: ".o_form_view .o_field_widget[name=database_name] input",
                run: `edit ${databaseName}`,
            },
            {
                content: "Give the customer's email: their login and where the invitation goes",
                trigger: ".o_form_view .o_field_widget[name=admin_email] input",
                run: "edit customer@tour.example",
            },
            ...pickMany2one("template_id", templateName),
            ...pickMany2one("server_id", serverName),
            ...stepUtils.saveForm(),
            {
                content: "A new instance is a draft",
                trigger: ".o_statusbar_status button[data-value=draft][aria-checked=true]",
            },
            {
                content: "Provision it",
                trigger: ".o_statusbar_buttons button[name=action_provision]:enabled",
                run: "click",
            },
            {
                content: "It is queued: the statusbar shows Provisioning",
                trigger: ".o_statusbar_status button[data-value=provisioning][aria-checked=true]",
            },
            {
                content: "The operation in progress is shown",
                trigger: ".o_form_view .alert-info .o_field_widget[name=running_operation_id]",
            },
        ];
    },
});

// Once the operation ran (tests/test_ui.py runs the queue between the tours).
registry.category("web_tour.tours").add("saas_manager_instance_running_tour", {
    steps: () => {
        const params = new URLSearchParams(window.location.search);
        const databaseName = params.get("saas_instance_db");
        return [
            ...stepUtils.goToAppSteps("saas_manager.saas_manager_menu_root", "Open SaaS Manager"),
            {
                content: "The list shows the instance Running",
                trigger: `.o_list_view .o_data_row:contains(${INSTANCE_NAME}) td[name=state]:contains(Running)`,
                run: "click",
            },
            {
                content: "The statusbar shows Running",
                trigger: ".o_statusbar_status button[data-value=running][aria-checked=true]:contains(Running)",
            },
            {
                content: "Its URL is shown",
                trigger: `.o_form_view .o_field_widget[name=url]:contains(${databaseName})`,
            },
            {
                content: "The invitation was sent",
                trigger: ".o_form_view .o_field_widget[name=invitation_state]:contains(Sent)",
            },
            {
                content: "Its provisioning is one operation",
                trigger: ".o_form_view button[name=action_view_operations] .o_stat_value:contains(1)",
            },
            {
                // Last: opening the instance switches this browser's session to it.
                content: "The customer's URL opens their instance's login page",
                trigger: `.o_form_view .o_field_widget[name=url] a:contains(${databaseName})`,
                async run() {
                    const link = document.querySelector(".o_form_view .o_field_widget[name=url] a");
                    const response = await fetch(link.href, { credentials: "same-origin" });
                    const text = await response.text();
                    if (!response.ok || !text.includes("oe_login_form")) {
                        throw new Error(`no login page at ${link.href} (${response.status})`);
                    }
                },
            },
        ];
    },
});
