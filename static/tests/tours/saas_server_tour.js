/** @odoo-module **/
/**
 * Register the Odoo serving this very page as a SaaS server, through the menus:
 * its URL is the browser's own origin, so Test Connection and Activate make a
 * real JSON-RPC call to a real Odoo. Run by tests/test_ui.py.
 */

import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

const SERVER_NAME = "Tour Self Server";
const SERVER_CODE = "tour-self";

registry.category("web_tour.tours").add("saas_manager_server_tour", {
    steps: () => [
        ...stepUtils.goToAppSteps("saas_manager.saas_manager_menu_root", "Open SaaS Manager"),
        {
            content: "Open the Configuration menu",
            trigger: ".o_main_navbar [data-menu-xmlid='saas_manager.saas_manager_menu_configuration']",
            run: "click",
        },
        {
            content: "Open Servers",
            trigger: ".dropdown-item[data-menu-xmlid='saas_manager.saas_server_menu']",
            run: "click",
        },
        {
            content: "The server list is shown",
            trigger: ".o_breadcrumb .o_last_breadcrumb_item:contains(Servers)",
        },
        {
            content: "Create a server",
            trigger: ".o_control_panel .o_list_button_add, .o_control_panel .o-kanban-button-new",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_form_view .o_field_widget[name=name] input",
            run: `edit ${SERVER_NAME}`,
        },
        {
            content: "Give it a code",
            trigger: ".o_form_view .o_field_widget[name=code] input",
            run: `edit ${SERVER_CODE}`,
        },
        {
            content: "Point it at the Odoo serving this page",
            trigger: ".o_form_view .o_field_widget[name=server_url] input",
            async run(helpers) {
                await helpers.edit(window.location.origin);
            },
        },
        ...stepUtils.saveForm(),
        {
            content: "A new server is a draft",
            trigger: ".o_statusbar_status button[data-value=draft][aria-checked=true]",
        },
        {
            content: "Test the connection",
            trigger: ".o_statusbar_buttons button[name=action_test_connection]:enabled",
            run: "click",
        },
        {
            content: "The test reports success",
            trigger:
                ".o_notification:has(.o_notification_bar.bg-success) .o_notification_title:contains(Connection successful)",
        },
        {
            content: "The test changed no state",
            trigger: ".o_statusbar_status button[data-value=draft][aria-checked=true]",
        },
        {
            content: "Activate the server",
            trigger: ".o_statusbar_buttons button[name=action_activate]:enabled",
            run: "click",
        },
        {
            content: "The statusbar shows Active",
            trigger: ".o_statusbar_status button[data-value=active][aria-checked=true]:contains(Active)",
        },
        {
            content: "The health status is Healthy",
            trigger: ".o_form_view .o_field_widget[name=health_status]:contains(Healthy)",
        },
        {
            content: "Open the server's instances",
            trigger: ".o-form-buttonbox button[name=action_view_instances]",
            run: "click",
        },
        {
            content: "The instance list is shown, empty",
            trigger: `.o_breadcrumb:contains(${SERVER_NAME}) .o_last_breadcrumb_item:contains(Instances)`,
        },
        {
            trigger: ".o_list_view .o_view_nocontent:contains(Provision your first instance)",
        },
        {
            content: "Start an instance from there",
            trigger: ".o_control_panel .o_list_button_add, .o_control_panel .o-kanban-button-new",
            run: "click",
        },
        {
            content: "It is on this server",
            trigger: `.o_form_view .o_field_widget[name=server_id] input:value(${SERVER_NAME})`,
        },
        ...stepUtils.discardForm(),
    ],
});
