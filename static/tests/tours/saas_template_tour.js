/** @odoo-module **/
/**
 * Create a template through the menus and press Create Database: the button
 * checks the server and queues the work for the "SaaS: Create Template
 * Databases" cron job, says so in a notification, and the template shows
 * Creating. tests/test_ui.py prepared an active server and passes its name in
 * the start URL's query (saas_server).
 */

import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

const TEMPLATE_NAME = "Tour Template";
const TEMPLATE_DB = "tour_template_db";

registry.category("web_tour.tours").add("saas_manager_template_tour", {
    steps: () => {
        const serverName = new URLSearchParams(window.location.search).get("saas_server");
        return [
            ...stepUtils.goToAppSteps("saas_manager.saas_manager_menu_root", "Open SaaS Manager"),
            {
                content: "Open Templates",
                trigger: ".o_main_navbar [data-menu-xmlid='saas_manager.saas_template_menu']",
                run: "click",
            },
            {
                content: "Create a template",
                trigger: ".o_control_panel .o_list_button_add",
                run: "click",
            },
            {
                content: "Name it",
                trigger: ".o_form_view .o_field_widget[name=name] input",
                run: `edit ${TEMPLATE_NAME}`,
            },
            {
                content: "Name its database",
                trigger: ".o_form_view .o_field_widget[name=database_name] input",
                run: `edit ${TEMPLATE_DB}`,
            },
            {
                content: `Search the server ${serverName}`,
                trigger: ".o_form_view .o_field_widget[name=server_id] input",
                run: `edit ${serverName}`,
            },
            {
                content: "Pick it",
                trigger: `.o_field_widget[name=server_id] .o-autocomplete--dropdown-item > a:contains(${serverName})`,
                run: "click",
            },
            ...stepUtils.saveForm(),
            {
                content: "A new template is a draft",
                trigger: ".o_statusbar_status button[data-value=draft][aria-checked=true]",
            },
            {
                content: "Create its database",
                trigger: ".o_statusbar_buttons button[name=action_create_database]:enabled",
                run: "click",
            },
            {
                content: "The work is queued",
                trigger: ".o_notification:contains(Queued)",
            },
            {
                content: "The template shows Creating",
                trigger: ".o_statusbar_status button[data-value=creating][aria-checked=true]",
            },
        ];
    },
});
