/** @odoo-module **/
/**
 * When an operation ends, the server sends its user "saas_manager.operation_done"
 * on the bus (beside a notification). If the view on screen shows the record the
 * operation was about (its form, or a list of that model), it is reloaded, so a
 * form showing "Provisioning…" turns "Running" without the user reloading it.
 */
import { registry } from "@web/core/registry";

export const saasOperationRefreshService = {
    dependencies: ["bus_service", "action"],
    start(env, { bus_service, action }) {
        bus_service.subscribe("saas_manager.operation_done", ({ model, res_id }) => {
            const controller = action.currentController;
            const props = controller && controller.props;
            if (!props || props.resModel !== model) {
                return;
            }
            if (props.resId && props.resId !== res_id) {
                return;
            }
            action.doAction({ type: "ir.actions.client", tag: "soft_reload" });
        });
    },
};

registry.category("services").add("saas_manager_operation_refresh", saasOperationRefreshService);
